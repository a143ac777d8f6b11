"""Whole series: reading a DICOM folder or a volume slice by slice, 3D lesions, series outputs."""
