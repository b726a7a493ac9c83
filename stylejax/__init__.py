"""stylejax: what a pretrained CNN has learned, and neural style transfer, in JAX."""

from stylejax.errors import StylejaxError

__all__ = ["StylejaxError"]
__version__ = "0.1.0"
