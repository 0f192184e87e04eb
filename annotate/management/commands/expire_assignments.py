from django.core.management.base import BaseCommand

from annotate.services import assignment_expire_overdue


class Command(BaseCommand):
    help = "Expire accepted assignments past their deadline so their slots go to other workers."

    def handle(self, *args: object, **options: object) -> None:
        count = assignment_expire_overdue()
        self.stdout.write(f"Expired {count} assignment(s).")
