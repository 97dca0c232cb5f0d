"""OARSeg's MRML-level logic (no Qt): organs at risk on pelvic CT, on volume nodes."""
