"""Policy decision point for autonomous AI agents: gRPC in front of Open Policy Agent."""

__version__ = "0.1.0"
