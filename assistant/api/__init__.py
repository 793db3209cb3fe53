"""The OpenAI-compatible API for research teams: keys, /v1 relay, usage."""
