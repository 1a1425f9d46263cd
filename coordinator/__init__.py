"""The coordinator service: its REST API (``api``), the engine that runs each transaction's
state machine (``engine``), the decision log (``log``), the client to participants
(``transport``), its settings (``config``) and the records it logs (``records``)."""

__all__: list[str] = []
