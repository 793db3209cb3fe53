"""Make a fresh installation usable: the demo user and the demo models."""

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from assistant.models import ModelProfile

# What the bundled simulator serves, so its models read well in the picker.
# The prefilled one imitates a server whose chat template opens <think>.
SIMULATOR_PROFILES = {
    "deepseek-r1": {
        "display_name": "DeepSeek-R1 (reasoning_content)",
        "sort_order": 10,
    },
    "deepseek-r1-vllm": {"display_name": "DeepSeek-R1 (reasoning)", "sort_order": 20},
    "deepseek-r1-tags": {
        "display_name": "DeepSeek-R1 (<think> tags)",
        "sort_order": 30,
    },
    "deepseek-r1-prefilled": {
        "display_name": "DeepSeek-R1 (template opens <think>)",
        "sort_order": 40,
        "starts_in_reasoning": True,
    },
    "deepseek-v3": {"display_name": "DeepSeek-V3", "sort_order": 50},
}


class Command(BaseCommand):
    help = "Create the demo user (DEMO_PASSWORD) and the simulator's model profiles."

    def handle(self, *args, **options):
        self._ensure_demo_user(os.environ.get("DEMO_PASSWORD", ""))
        if os.environ.get("USING_SIMULATOR") == "1":
            self._ensure_simulator_profiles()

    def _ensure_demo_user(self, password):
        users = get_user_model()
        if not password:
            count = users.objects.count()
            self.stdout.write(
                f"{count} user(s) can sign in. To add one:\n"
                "  .venv/bin/python manage.py createsuperuser\n"
                "or start with DEMO_PASSWORD=... make run to get a user 'demo'."
            )
            return

        user, created = users.objects.get_or_create(username="demo")
        if not created and user.check_password(password):
            # Setting the same password again would still sign the demo
            # user out everywhere (the session hash changes with the salt).
            self.stdout.write("User 'demo' has the password in DEMO_PASSWORD.")
            return
        user.set_password(password)
        user.save()
        verb = "Created" if created else "Updated"
        self.stdout.write(f"{verb} user 'demo' with the password in DEMO_PASSWORD.")

    def _ensure_simulator_profiles(self):
        for name, values in SIMULATOR_PROFILES.items():
            defaults = {**ModelProfile.defaults_for(name), **values}
            ModelProfile.objects.get_or_create(name=name, defaults=defaults)
