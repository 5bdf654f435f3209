"""Sites: named deployment environments and their cached, split channel datasets."""

from core.sites.catalog import get_site, list_sites
from core.sites.config import ArrayConfig, GeometricParams, SiteConfig
from core.sites.dataset import ChannelDataset, load_dataset

__all__ = [
    "ArrayConfig",
    "ChannelDataset",
    "GeometricParams",
    "SiteConfig",
    "get_site",
    "list_sites",
    "load_dataset",
]
