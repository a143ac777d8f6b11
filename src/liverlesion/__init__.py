"""liverlesion: joint liver-lesion segmentation and classification on CT, for the edge."""

__version__ = "0.1.0"
