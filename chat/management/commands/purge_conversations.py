from django.core.management.base import BaseCommand

from chat.actions import UNDO_WINDOW, purge_deleted


class Command(BaseCommand):
    help = (
        "Delete for good the conversations users deleted more than the undo "
        "window ago. Run it daily (cron, a systemd timer); deleting a "
        "conversation also purges that user's own expired ones."
    )

    def handle(self, *args, **options):
        count = purge_deleted()
        self.stdout.write(f"purged {count} rows (undo window {UNDO_WINDOW})")
