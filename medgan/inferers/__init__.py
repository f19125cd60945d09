"""Whole-volume sliding-window inference."""

from medgan.inferers.sliding_window import make_sliding_window_inferer, predict_volume

__all__ = ["make_sliding_window_inferer", "predict_volume"]
