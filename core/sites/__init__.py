"""Sites: named deployment environments and their cached, split channel datasets."""

from edgejoule.sites.catalog import get_site, list_sites
from edgejoule.sites.config import ArrayConfig, GeometricParams, SiteConfig
from edgejoule.sites.dataset import ChannelDataset, load_dataset

__all__ = [
    "ArrayConfig",
    "ChannelDataset",
    "GeometricParams",
    "SiteConfig",
    "get_site",
    "list_sites",
    "load_dataset",
]
