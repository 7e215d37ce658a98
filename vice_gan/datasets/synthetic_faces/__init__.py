"""synthetic_faces: the embedded default data set of procedural FACS-animated face videos.

Importing this package registers the TFDS builder `synthetic_faces` (configs `default`, `small`).
Modules: facs (AU list, EMFACS prototypes, timelines), identity (subject appearance), canvas,
static_parts and dynamic_parts (drawing), renderer (video rendering), builder (TFDS).
"""

from vice_gan.datasets.synthetic_faces.builder import SyntheticFaces, SyntheticFacesConfig

__all__ = ["SyntheticFaces", "SyntheticFacesConfig"]
