"""onenet: one image-captioning network, trained once, serving many uses."""

__version__ = "0.1.0"
