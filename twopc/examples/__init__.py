"""Example services built on the participant SDK and the adapters."""
