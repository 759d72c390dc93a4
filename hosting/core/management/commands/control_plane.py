"""Make the control plane's secrets for production (docs/security.md).

    manage.py control_plane redis-acl --dir /etc/hosting/redis --node hn1 --node hn2
    manage.py control_plane signing-key web --dir /etc/hosting/signing
    manage.py control_plane signing-key node --dir /etc/hosting/signing --trust web.pem

``redis-acl`` keeps (or makes) one password file per Redis user, 0600, and
writes ``users.acl`` for redis-server's ``aclfile`` (only the passwords'
SHA-256). ``signing-key`` makes a signing key (0600) and its certificate
once, and ``trust/``: its own certificate and those given with ``--trust``.
Nothing secret is printed: only the paths written.
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from hosting import controlplane as cp


class Command(BaseCommand):
    help = "Make Redis users' passwords and ACL file, or a message signing key."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="what", required=True)
        acl = sub.add_parser("redis-acl", help="passwords and users.acl for Redis")
        acl.add_argument("--dir", required=True)
        acl.add_argument("--node", action="append", default=[], help="a node's name")
        key = sub.add_parser("signing-key", help="a signing key, certificate and trust store")
        key.add_argument("name", help="web (web side) or node (on a node)")
        key.add_argument("--dir", required=True)
        key.add_argument("--trust", action="append", default=[],
                         help="another certificate to accept (a node: the web side's)")

    def handle(self, *args, what, **options):
        directory = Path(options["dir"])
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if what == "redis-acl":
            from django.core.exceptions import ValidationError

            from hosting.nodes.models import node_name
            for name in options["node"]:
                try:
                    node_name(name)
                except ValidationError:
                    raise CommandError(f"not a node name: {name!r}") from None
            users = [cp.WEB_USER, *(cp.node_user(n) for n in options["node"])]
            passwords = {u: cp.password_file(directory / f"redis-{u}.password") for u in users}
            cp.write_private(directory / "users.acl",
                             cp.acl_file_text(passwords, options["node"]))
            for user in users:
                self.stdout.write(str(directory / f"redis-{user}.password"))
            self.stdout.write(str(directory / "users.acl"))
        else:
            name = options["name"]
            key, cert = cp.signing_pair(directory, name)
            trust = cp.trust_dir(directory, "", [cert, *options["trust"]])
            for path in (key, cert, trust):
                self.stdout.write(str(path))
