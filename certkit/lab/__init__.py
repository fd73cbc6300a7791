"""The lab: an Exchange-like (or Postfix-like) Domain Security endpoint, a sender, and the demo.

* :mod:`certkit.lab.receiver` -- :class:`Receiver`, the endpoint's decisions without I/O (personality replies).
* :mod:`certkit.lab.server` -- :class:`LabServer`, the asyncio driver of the receiver (sockets, TLS, time).
* :mod:`certkit.lab.sender` -- one delivery as the sending Edge does it, and the queue as Get-Queue shows it.
* :mod:`certkit.lab.demo` -- contoso.com and fabrikam.com on loopback, from failure to success.
* :mod:`certkit.lab.httpfiles` -- :class:`HttpFiles`, a loopback HTTP server publishing CRLs (demo, tests, bench).
"""

from certkit.core.smtp.server import SmtpServerEngine
from certkit.lab.receiver import Receiver
from certkit.lab.server import LabConfig, LabServer, Personality, SessionRecord, client_verdict, run_in_thread

__all__ = ["LabConfig", "LabServer", "Personality", "Receiver", "SessionRecord", "SmtpServerEngine", "client_verdict",
           "run_in_thread"]
