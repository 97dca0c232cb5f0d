"""A pickle that proves whether it was unpickled: doing so creates a marker file."""


class WritesMarker:
    path = ""

    def __reduce__(self):
        return (open, (self.path, "w"))
