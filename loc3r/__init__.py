"""loc3r: Loc3R-VLM, language-based localization and 3D reasoning with a video vision-language model."""

__version__ = "0.1.0"
