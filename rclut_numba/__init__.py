"""rclut_numba: LUT image super-resolution (SR-LUT, MuLUT, RC-LUT) with numpy and numba only."""
from .bundle import BundleError, load_bundle, save_bundle
from .engine import LutModel, load_model
from .spec import ModelSpec, SpecError

__all__ = ["BundleError", "LutModel", "ModelSpec", "SpecError", "load_bundle", "load_model",
           "save_bundle"]
__version__ = "0.1.0"
