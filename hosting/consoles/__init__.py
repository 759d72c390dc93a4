"""The web console of a VPS (issue 16): tickets, the browser's WebSocket, the node's relay.

A browser on the VPS page asks for a one-time ticket (``tickets.issue``, ``POST
/api/v1/environments/<veid>/console/``), opens ``/ws/console/<veid>/?ticket=...``
on the ASGI server (``consumer.ConsoleConsumer``), which redeems it, writes the
``ConsoleSession`` row and sends a signed task to the VE's node (queue
``node.<name>.console``). The node's console worker (root) opens the VE's
console with the engine and bridges its bytes with the web side through two
Redis lists of that node (``relay``), sealed with a key only the database holds
(``frames``). docs/console.md has the whole picture.
"""
