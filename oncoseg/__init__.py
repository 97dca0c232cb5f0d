"""OncoSeg engine: segmentation and staging methods for cancer imaging.

The engine never imports Slicer; the Slicer modules and the command line both drive it through
the task registry (:mod:`oncoseg.tasks`). Images cross function boundaries as SimpleITK images
so that geometry always travels with the pixels.
"""

__version__ = "0.1.0"
