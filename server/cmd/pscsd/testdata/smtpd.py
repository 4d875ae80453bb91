# A mail server for the backup tests: aiosmtpd (Debian's python3-aiosmtpd)
# on 127.0.0.1, on PORT or one the kernel picks (printed on the first line
# of standard output), delivering to a maildir. With "starttls" it offers
# STARTTLS with the given certificate and refuses mail before it; with
# "plain" it offers no TLS at all. It refuses every recipient at the domain
# refused.invalid (550), as a mail server refuses an unknown address. It
# runs until killed.
#
#   python3 smtpd.py starttls|plain CERT KEY MAILDIR [PORT]
import asyncio
import ssl
import sys

from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import SMTP


class Box(Mailbox):
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower().endswith("@refused.invalid"):
            return "550 5.1.1 <%s>: recipient refused by the test server" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"


async def main():
    mode, cert, key, maildir = sys.argv[1:5]
    port = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    kw = {}
    if mode == "starttls":
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        kw = {"tls_context": ctx, "require_starttls": True}
    handler = Box(maildir)
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: SMTP(handler, hostname="localhost", **kw), "127.0.0.1", port)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
