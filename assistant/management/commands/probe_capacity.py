"""Probe how many requests the configured model server takes at once.

    python manage.py probe_capacity --model deepseek-r1 \\
        --concurrency 1,4,8 --context 2048,4096 --max-requests 40 --timeout 60

Prints the seed's table for each cell (total tok/s, mean tok/s of one
request, requests over the timeout, mean time to first token) and the
ModelProfile limits it suggests; --save writes them to the model's profile.
See assistant.capacity_probe for how the probe bounds itself.
"""

from django.core.management.base import BaseCommand, CommandError

from assistant import capacity_probe
from assistant.models import ModelProfile

ROW = "{:>8} {:>11} {:>11} {:>13} {:>9} {:>7} {:>13}  {}"


def positive_numbers(text):
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        numbers = []
    if not numbers or min(numbers) < 1:
        raise CommandError(
            f"expected positive whole numbers separated by commas: {text!r}"
        )
    return numbers


class Command(BaseCommand):
    help = "Measure the model server at a bounded grid of concurrency by prompt size."

    def add_arguments(self, parser):
        parser.add_argument(
            "--model", required=True, help="model id, as /models lists it"
        )
        parser.add_argument(
            "--concurrency",
            default=",".join(map(str, capacity_probe.DEFAULT_CONCURRENCY)),
            help="concurrent requests per cell, comma-separated",
        )
        parser.add_argument(
            "--context",
            default=",".join(map(str, capacity_probe.DEFAULT_CONTEXTS)),
            help="prompt sizes in tokens, comma-separated",
        )
        parser.add_argument(
            "--max-requests",
            type=int,
            default=capacity_probe.DEFAULT_MAX_REQUESTS,
            help="send at most this many requests in all",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=capacity_probe.DEFAULT_TIMEOUT,
            help="seconds after which a request is cut and counted as over",
        )
        parser.add_argument(
            "--max-tokens",
            type=int,
            default=capacity_probe.DEFAULT_MAX_TOKENS,
            help="output tokens to ask for per request",
        )
        parser.add_argument(
            "--pause",
            type=float,
            default=capacity_probe.DEFAULT_PAUSE,
            help="seconds to wait between cells",
        )
        parser.add_argument(
            "--save",
            action="store_true",
            help="write the suggested limits to the model's profile",
        )

    def handle(self, *args, **options):
        probe = self._probe(options)
        cells = probe.run()
        self._print_table(cells, probe)

        suggestion = capacity_probe.suggest(cells, probe.timeout)
        self._print_suggestion(suggestion)
        if options["save"]:
            self._save(options["model"], suggestion)

    def _probe(self, options):
        if options["max_requests"] < 1 or options["timeout"] <= 0:
            raise CommandError("--max-requests and --timeout must be positive")
        if options["max_tokens"] < 1 or options["pause"] < 0:
            raise CommandError("--max-tokens must be positive, --pause not negative")

        return capacity_probe.Probe(
            model=options["model"],
            concurrency=positive_numbers(options["concurrency"]),
            contexts=positive_numbers(options["context"]),
            timeout=options["timeout"],
            max_requests=options["max_requests"],
            max_tokens=options["max_tokens"],
            pause=options["pause"],
            progress=lambda text: self.stderr.write(text),
        )

    def _print_table(self, cells, probe):
        over = f"over {probe.timeout:g} s"
        self.stdout.write(
            ROW.format(
                "context", "concurrency", "total tok/s", "tok/s/request",
                over, "errors", "first token s", "",
            )
        )  # fmt: skip
        for cell in cells:
            if cell.skipped:
                self.stdout.write(
                    ROW.format(cell.context, cell.concurrency, *["-"] * 5, cell.skipped)
                )
                continue
            self.stdout.write(
                ROW.format(
                    cell.context,
                    cell.concurrency,
                    f"{cell.total_rate:.1f}",
                    _number(cell.mean_request_rate, "{:.1f}"),
                    f"{cell.over_timeout}/{cell.concurrency}",
                    cell.errors,
                    _number(cell.mean_first_token_s, "{:.2f}"),
                    _first_error(cell),
                )
            )
        sizing = "measured" if probe.calibrated else "assumed"
        self.stdout.write(
            f"{probe.sent} requests sent; {probe.chars_per_token:.2f} characters "
            f"a token ({sizing})."
        )

    def _print_suggestion(self, suggestion):
        self.stdout.write("Suggested model profile limits:")
        for reason in suggestion.reasons:
            self.stdout.write(f"  {reason}")

    def _save(self, model, suggestion):
        fields = suggestion.profile_fields()
        if not fields:
            raise CommandError("Nothing to save: the probe suggests no limit.")

        profile = ModelProfile.ensure(model)
        for name, value in fields.items():
            setattr(profile, name, value)
        profile.save(update_fields=list(fields))
        self.stdout.write(f"Saved to the profile of {profile.name}: {fields}")


def _number(value, pattern):
    return "-" if value is None else pattern.format(value)


def _first_error(cell):
    errors = [r.error for r in cell.requests if r.error]
    return errors[0] if errors else ""
