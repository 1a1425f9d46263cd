"""Resource managers that take part in global transactions through the participant SDK:
``postgres``, ``kafka`` and ``mockqueue``, each a Resource and a runnable service."""

__all__: list[str] = []
