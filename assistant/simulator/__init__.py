"""An OpenAI-compatible model simulator for demos and tests (see server.py)."""

from assistant.simulator.server import MODELS, SimulatorConfig, SimulatorServer

__all__ = ["MODELS", "SimulatorConfig", "SimulatorServer"]
