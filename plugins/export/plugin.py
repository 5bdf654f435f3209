"""``edgejoule export`` and ``edgejoule publish`` (heavy imports inside the commands)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from edgejoule.hookspecs import hookimpl


def export_command(
    source: Path = typer.Option(..., "--from", help="chosen.json written by edgejoule compress"),
    out: Path = typer.Option(..., "--out", help="package directory to write (model.tflite + manifest.json)"),
    compute: str = typer.Option("auto", help="integer (dynamic-range kernels), float (weight-only), or auto: "
                                "integer if it passes the parity check, else float"),
    model_id: str = typer.Option(None, "--id", help="package id (default: SITE-precoder-SHA)"),
    allow_dominated: bool = typer.Option(False, "--allow-dominated", help="export a model that a classical method "
                                         "dominates (more sum rate at less energy; compress's report names it)"),
    as_json: bool = typer.Option(False, "--json", help="print the package, its log and its manifest as JSON"),
) -> None:
    """Export a compressed precoder to a TFLite model package, checking it against torch. The converter's own
    output goes to OUT/convert.log."""
    from rich.console import Console

    from edgejoule.cli.output import print_json
    from edgejoule.errors import EdgejouleError
    from edgejoule.plugins.export.tflite import converter_output_logged, export_precoder

    if compute not in ("auto", "integer", "float"):
        raise EdgejouleError(f"--compute must be auto, integer or float, got '{compute}'")
    if not source.exists():
        raise EdgejouleError(f"{source} does not exist: run edgejoule compress first, it writes chosen.json")
    log = out / "convert.log"
    with converter_output_logged(log) as terminal, Console(file=terminal).status("converting and checking parity"):
        manifest = export_precoder(source, out, compute, model_id, allow_dominated)  # type: ignore[arg-type]
    if as_json:
        print_json({"package": str(out), "log": str(log), "manifest": json.loads(manifest.to_json())})
        return
    m = manifest.metrics
    typer.echo(f"converter output: {log}")
    typer.echo(f"sum rate LiteRT {m['sum_rate_litert']:.4f} vs torch {m['sum_rate_torch']:.4f}; "
               f"{manifest.energy.total_uj:.4g} uJ estimated per inference")
    typer.echo(f"wrote {out}: package {manifest.id} ({manifest.size_bytes} bytes)")  # the id, last: the next command's


def publish_command(
    package: Path = typer.Argument(..., help="package directory (model.tflite + manifest.json)"),
    registry: str = typer.Option("http://127.0.0.1:8000", "--registry", envvar="EDGEJOULE_REGISTRY_URL",
                                 help="registry base URL (like the other registry commands)"),
    token: str = typer.Option(..., "--token", envvar=["EDGEJOULE_ADMIN_TOKEN", "EDGEJOULE_REGISTRY_ADMIN_TOKEN"],
                              help="admin token"),
    as_json: bool = typer.Option(False, "--json", help="print the registry's answer as JSON"),
) -> None:
    """Upload a model package to the registry (POST /api/v1/models)."""
    import httpx

    from edgejoule.cli.output import console, print_json
    from edgejoule.errors import EdgejouleError
    from edgejoule.schemas.api import API_PREFIX
    from edgejoule.schemas.http import problem_detail
    from edgejoule.schemas.manifest import MANIFEST_FILE, MODEL_FILE, ModelManifest

    manifest_path, model_path = package / MANIFEST_FILE, package / MODEL_FILE
    if not manifest_path.exists() or not model_path.exists():
        raise EdgejouleError(f"{package} is not a model package: it needs {MANIFEST_FILE} and {MODEL_FILE}")
    manifest = ModelManifest.model_validate_json(manifest_path.read_text())
    try:
        response = httpx.post(f"{registry.rstrip('/')}{API_PREFIX}/models", headers={"Authorization": f"Bearer {token}"},
                              files={"manifest": (MANIFEST_FILE, manifest_path.read_bytes(), "application/json"),
                                     "model": (MODEL_FILE, model_path.read_bytes(), "application/octet-stream")},
                              timeout=60)
    except httpx.HTTPError as exc:
        raise EdgejouleError(f"cannot reach the registry at {registry}: {exc}") from None
    if response.status_code == 409:
        raise EdgejouleError(f"{manifest.id} is already in the registry at {registry}: a package is published once; "
                             "export the model again with a new --id to publish it as another package")
    if response.status_code >= 400:
        detail = problem_detail(response.headers.get("content-type", ""), response.content)
        raise EdgejouleError(f"the registry refused {manifest.id}: {response.status_code} {detail}")
    if as_json:
        print_json(response.json())  # the registry's UploadedModel: id, site, task, version, sha256
        return
    console.print(f"published {manifest.id} to {registry} (site {manifest.site}, sha256 {manifest.sha256[:12]}...)")


@hookimpl
def register_commands(cli) -> None:
    cli.command("export")(export_command)
    cli.command("publish")(publish_command)
