"""Data: HumanData reading, mixed sampling, augmentation, and the DALI / reference loaders."""
from spin_fast.data.humandata import HumanData, HumanDataError, write_humandata  # noqa: F401
