"""PySide6 front end: widgets never import torch."""
