from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.errors import RunError
from runs.models import ApiToken
from runs.services import api_token_create, api_token_revoke


class Command(BaseCommand):
    help = (
        "Make, list or revoke a requester's REST API tokens. A new token's key is printed once; only its "
        "SHA-256 is stored."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="make a token for a requester (an active staff account)")
        create.add_argument("username")
        create.add_argument("--name", required=True, help="what the token is for, e.g. the script")
        listing = actions.add_parser("list", help="list tokens (of one requester when given)")
        listing.add_argument("username", nargs="?")
        revoke = actions.add_parser("revoke", help="revoke a token by its id (see list)")
        revoke.add_argument("token_id", type=int)

    def handle(self, *args: object, action: str, **options: Any) -> None:
        try:
            if action == "create":
                self._create(options["username"], options["name"])
            elif action == "list":
                self._list(options.get("username"))
            else:
                self._revoke(options["token_id"])
        except RunError as exc:
            raise CommandError(str(exc)) from None

    def _create(self, username: str, name: str) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"User: no account called {username!r}.")
        token, key = api_token_create(user=user, name=name)
        self.stdout.write(f"Token {token.pk} ({token.name}) for {username}. Its key, shown only now:")
        self.stdout.write(key)

    def _list(self, username: str | None) -> None:
        tokens = ApiToken.objects.select_related("user").order_by("user__username", "-created_at")
        if username:
            tokens = tokens.filter(user__username=username)
        for token in tokens:
            state = f"revoked {token.revoked_at:%Y-%m-%d %H:%M}" if token.revoked_at else "live"
            used = f"used {token.last_used_at:%Y-%m-%d %H:%M}" if token.last_used_at else "never used"
            row = [str(token.pk), token.user.get_username(), f"{token.prefix}…", token.name, state, used]
            self.stdout.write("\t".join(row))

    def _revoke(self, token_id: int) -> None:
        token = ApiToken.objects.filter(pk=token_id).first()
        if token is None:
            raise CommandError(f"Token: no token with id {token_id}.")
        api_token_revoke(token=token)
        self.stdout.write(self.style.SUCCESS(f"Revoked token {token.pk} ({token.name})."))
