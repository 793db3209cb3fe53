"""Serve the OpenAI-compatible model simulator in the foreground.

    python manage.py simulate_model --host 127.0.0.1 --port 8001 --token-delay 0.03

The app then talks to http://127.0.0.1:8001/v1 as if it were vLLM or Ollama.
"""

from django.core.management.base import BaseCommand, CommandError

from assistant.simulator import MODELS, SimulatorConfig, SimulatorServer

DEFAULTS = SimulatorConfig()


def config_from_options(options):
    try:
        return SimulatorConfig(
            token_delay=options["token_delay"],
            first_token_delay=options["first_token_delay"],
            chunk_chars=options["chunk_chars"],
            keepalive=options["keepalive"],
            api_key=options["api_key"] or None,
            capacity_mode=options["capacity_mode"],
            capacity_time_scale=options["capacity_time_scale"],
        )
    except ValueError as error:
        raise CommandError(str(error)) from error


class Command(BaseCommand):
    help = "Serve the OpenAI-compatible model simulator until interrupted."

    # The simulator needs no database and no app checks.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8001)
        parser.add_argument(
            "--token-delay",
            type=float,
            default=DEFAULTS.token_delay,
            help="seconds between chunks",
        )
        parser.add_argument(
            "--first-token-delay",
            type=float,
            default=DEFAULTS.first_token_delay,
            help="seconds before the first chunk",
        )
        parser.add_argument(
            "--chunk-chars",
            type=int,
            default=DEFAULTS.chunk_chars,
            help="characters per chunk; each chunk counts as one token",
        )
        parser.add_argument(
            "--keepalive",
            type=float,
            default=DEFAULTS.keepalive,
            help="seconds between SSE keep-alive comments while waiting",
        )
        parser.add_argument(
            "--api-key",
            default=None,
            help="require this bearer token on /v1 requests",
        )
        parser.add_argument(
            "--capacity-mode",
            action="store_true",
            help="pace replies like a loaded GPU server: shared throughput "
            "that levels off, stalls under too many long prompts",
        )
        parser.add_argument(
            "--capacity-time-scale",
            type=float,
            default=DEFAULTS.capacity_time_scale,
            help="multiply capacity-mode intervals by this (0.02: 50x faster)",
        )

    def handle(self, *args, **options):
        config = config_from_options(options)
        host, port = options["host"], options["port"]

        try:
            server = SimulatorServer(host=host, port=port, config=config)
        except OSError as error:
            raise CommandError(f"Cannot listen on {host}:{port}: {error}") from error

        self.stdout.write(
            f"Model simulator at {server.url} serving {', '.join(MODELS)}. "
            "Press Ctrl+C to stop."
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            # Ctrl+C is the normal way to stop the foreground server.
            self.stdout.write("Model simulator stopped.")
        finally:
            server.stop()
