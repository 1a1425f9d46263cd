"""The tools on top of everything: the ``twopc`` command line and the benchmark."""

__all__: list[str] = []
