#!/usr/bin/env python3
"""An AI receptionist backend for a plumbing business, for callbridge.

Standard library only. It
  * verifies every callback's X-Callbridge-Signature (HMAC-SHA256, 5-minute window)
    and ignores retried events it already handled (idempotency_key);
  * answers call.started with a call plan for "Rapid Rooter Plumbing";
  * handles the schedule_appointment tool call (books the first free slot);
  * stores the conversation (turns, barge-ins, DTMF, bookings) in SQLite;
  * transfers the call to the on-call plumber when the caller says it is an
    emergency (transcript) or presses 0, through callbridge's control API;
  * with --call-back-missed, calls back every caller who hung up before the
    call was answered (call.ended reason "missed"), through POST /v1/calls,
    leaving a message if voicemail picks up;
  * with --cascaded, is the brain itself: callbridge transcribes (Deepgram) and
    speaks (ElevenLabs), and every turn.user is answered here, streamed as
    application/x-ndjson, by a small script that asks for the problem, name,
    address and a time, reads them back, books the visit and hangs up.

Run next to callbridge:
    RECEPTIONIST_SECRET=... CALLBRIDGE_API_TOKEN=cbt_... \
    python3 examples/receptionist/receptionist.py --port 9000 --callbridge http://127.0.0.1:8080
"""

import argparse
import hashlib
import hmac
import json
import os
import sqlite3
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_S = 300
MAX_BODY = 1 << 20
SLOTS = ["tomorrow 8-10am", "tomorrow 10am-12pm", "tomorrow 1-3pm", "the day after tomorrow 8-10am"]
EMERGENCY_WORDS = ("emergency", "burst", "flood", "water everywhere")

PLAN = {
    "engine": "openai_realtime",
    "instructions": (
        "You are the receptionist of Rapid Rooter Plumbing. Be brief and warm. Collect the "
        "caller's name, address and the problem, then offer to book a visit with the "
        "schedule_appointment tool. If water is flooding or a pipe burst, say you are "
        "connecting them to the on-call plumber."
    ),
    "greeting": "Thanks for calling Rapid Rooter Plumbing. How can I help you today?",
    "voice": "alloy",
    "tools": [
        {
            "name": "schedule_appointment",
            "description": "Book a plumber visit. Returns the confirmed time slot.",
            "parameters": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "address": {"type": "string"},
                    "problem": {"type": "string"},
                    "preferred_time": {"type": "string"},
                },
                "required": ["name", "address", "problem"],
            },
        }
    ],
    "record": True,
    "turn": {"endpoint_silence_ms": 600},
}


CASCADED_PLAN = {
    "engine": "cascaded",
    "greeting": "Thanks for calling Rapid Rooter Plumbing. What seems to be the problem?",
    "record": True,
}

# The cascaded script: what to ask after each answer, and where the answer goes.
QUESTIONS = [
    ("problem", "Sorry to hear that. Can I have your name, please?"),
    ("name", "Thanks, {name}. What is the address?"),
    ("address", "Got it. When would you like the plumber to come?"),
]


def verify(secret: bytes, header: str, body: bytes, now=None, tolerance=TOLERANCE_S) -> bool:
    """Check `t=<unix>,v1=<hex>` against HMAC-SHA256(secret, "<t>.<body>")."""
    parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
    t = next((v.strip() for k, v in parts if k.strip() == "t"), None)
    sigs = [v.strip() for k, v in parts if k.strip() == "v1"]
    if t is None or not t.isdigit() or not sigs:
        return False
    now = time.time() if now is None else now
    if abs(now - int(t)) > tolerance:
        return False
    want = hmac.new(secret, t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(want, s) for s in sigs)


class Store:
    """The conversation, bookings and handled events, in SQLite."""

    def __init__(self, path):
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.lock = threading.Lock()
        with self.lock, self.db:
            self.db.executescript(
                """
                CREATE TABLE IF NOT EXISTS events (idempotency_key TEXT PRIMARY KEY, call_id TEXT,
                    type TEXT, body TEXT);
                CREATE TABLE IF NOT EXISTS bookings (call_id TEXT, slot TEXT, name TEXT, address TEXT,
                    problem TEXT);
                """
            )

    def first_time(self, event) -> bool:
        with self.lock, self.db:
            cur = self.db.execute(
                "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?)",
                (event["idempotency_key"], event["call_id"], event["type"], json.dumps(event)),
            )
            return cur.rowcount == 1

    def book(self, call_id, args) -> str:
        with self.lock, self.db:
            taken = {r[0] for r in self.db.execute("SELECT slot FROM bookings")}
            slot = next((s for s in SLOTS if s not in taken), None)
            if slot:
                self.db.execute(
                    "INSERT INTO bookings VALUES (?, ?, ?, ?, ?)",
                    (call_id, slot, args.get("name", ""), args.get("address", ""), args.get("problem", "")),
                )
            return slot


class Receptionist:
    def __init__(
        self, secret: bytes, store: Store, callbridge: str, api_token: str, on_call: str, cascaded=False, call_back=False
    ):
        self.secret, self.store = secret, store
        self.callbridge, self.api_token, self.on_call = callbridge.rstrip("/"), api_token, on_call
        self.transferred = set()
        self.cascaded = cascaded
        self.call_back = call_back
        self.answers = {}  # call_id -> what the caller told us so far (cascaded)
        self.lock = threading.Lock()

    def reply_lines(self, event):
        """The brain's reply to one caller turn, as ndjson lines (cascaded)."""
        call_id, said = event["call_id"], (event.get("transcript") or "").strip()
        with self.lock:
            a = self.answers.setdefault(call_id, {})
            step = len(a)
            if step < len(QUESTIONS):
                a[QUESTIONS[step][0]] = said.rstrip(".!?")
                return [{"reply_delta": QUESTIONS[step][1].format(**a)}]
            a["time"] = said.rstrip(".!?")
            self.answers.pop(call_id, None)
        slot = self.store.book(call_id, a)
        readback = f"Great. {a['name']}, a plumber will come to {a['address']} {a['time']}. "
        booked = f"Your booking for {slot} is confirmed. Goodbye." if slot else "We have no free slot this week, sorry."
        return [{"reply_delta": readback}, {"reply_delta": booked}, {"action": {"type": "hangup"}}]

    def handle(self, event):
        kind = event["type"]
        if kind == "call.started":
            return CASCADED_PLAN if self.cascaded else PLAN
        if kind == "tool.call":
            if event["name"] != "schedule_appointment":
                return {"result": {"error": f"unknown tool {event['name']}"}}
            slot = self.store.book(event["call_id"], event.get("arguments") or {})
            if not slot:
                return {"result": {"booked": False, "reason": "no free slot this week"}}
            return {"result": {"booked": True, "slot": slot}}
        if kind == "turn.user" and any(w in (event.get("transcript") or "").lower() for w in EMERGENCY_WORDS):
            self.transfer_later(event["call_id"])
        if kind == "dtmf" and event.get("digit") == "0":
            self.transfer_later(event["call_id"])
        if kind == "turn.agent" and event.get("interrupted"):
            log(f"{event['call_id']}: caller heard only {event.get('heard_ms')} of {event.get('sent_ms')} ms")
        if kind == "call.ended":
            log(f"{event['call_id']} ended: {event.get('reason')}, {event.get('user_turns')} caller turns")
            missed = event.get("reason") == "missed" and event.get("direction") != "outbound"
            if missed and self.call_back and event.get("from") and self.api_token:
                threading.Thread(target=self.call_back_now, args=(event["from"],), daemon=True).start()
        return {}

    def call_back_now(self, number):
        """Missed call -> call back: an outbound call with its own greeting."""
        plan = dict(PLAN, greeting="Hi, this is Rapid Rooter Plumbing returning your call. How can we help?")
        body = {"to": number, "plan": plan, "machine_detection": "leave_message"}
        self.post("/v1/calls", body, f"call back {number}")

    def transfer_later(self, call_id):
        # Answer the callback first; transfer from another thread.
        if call_id in self.transferred or not self.api_token:
            return
        self.transferred.add(call_id)
        threading.Thread(target=self.transfer, args=(call_id,), daemon=True).start()

    def transfer(self, call_id):
        self.post(f"/v1/calls/{call_id}/transfer", {"to": self.on_call}, f"{call_id}: transfer to {self.on_call}")

    def post(self, path, body, what):
        """POST to callbridge's control API with the number's token; log how it went."""
        req = urllib.request.Request(
            f"{self.callbridge}{path}",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.api_token}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                log(f"{what}: HTTP {r.status}")
        except Exception as e:  # noqa: BLE001 - an example: report and carry on
            log(f"{what}: failed: {e}")


def log(msg):
    print(f"receptionist: {msg}", file=sys.stderr, flush=True)


def make_handler(app: Receptionist):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            if n > MAX_BODY:
                return self.reply(413, {"error": "too large"})
            body = self.rfile.read(n)
            if not verify(app.secret, self.headers.get("X-Callbridge-Signature", ""), body):
                return self.reply(401, {"error": "bad signature"})
            event = json.loads(body)
            if app.cascaded and event["type"] == "turn.user":
                app.store.first_time(event)
                return self.stream(app.reply_lines(event))
            if event["type"] not in ("call.started", "tool.call") and not app.store.first_time(event):
                return self.reply(200, {})  # a retry of something already handled
            return self.reply(200, app.handle(event))

        def stream(self, lines):
            # HTTP/1.0 style: the body ends when the connection closes; each line is
            # flushed as it is written, so callbridge speaks it while we go on.
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.end_headers()
            try:
                for line in lines:
                    self.wfile.write(json.dumps(line).encode() + b"\n")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                log("reply cut off (the caller barged in)")

        def reply(self, status, obj):
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_):
            pass

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--callbridge", default="http://127.0.0.1:8080")
    ap.add_argument("--db", default="receptionist.db")
    ap.add_argument("--on-call", default=os.environ.get("ON_CALL_NUMBER", "+15550009999"))
    ap.add_argument("--self-test", action="store_true", help="check the signature code against the docs' vector")
    ap.add_argument(
        "--cascaded",
        action="store_true",
        help="be the brain: plan the cascaded engine and answer every turn.user (needs DEEPGRAM_API_KEY and "
        "ELEVENLABS_API_KEY in callbridge's environment)",
    )
    ap.add_argument(
        "--call-back-missed",
        action="store_true",
        help="call back callers who hung up before the call was answered (POST /v1/calls)",
    )
    a = ap.parse_args()
    if a.self_test:
        body = b'{"type":"call.started","call_id":"call_1","seq":1}'
        hdr = "t=1700000000,v1=34337189cda1d344c6595cf0e67b0df5c0e70362313ed63674f67d580336aed4"
        assert verify(b"whsec_test", hdr, body, now=1700000100)
        assert not verify(b"whsec_test", hdr, body, now=1700000400), "stale accepted"
        assert not verify(b"other", hdr, body, now=1700000000), "wrong secret accepted"
        assert not verify(b"whsec_test", hdr, body + b" ", now=1700000000), "changed body accepted"
        print("self-test ok")
        return
    secret = os.environ.get("RECEPTIONIST_SECRET", "").encode()
    if len(secret) < 16:
        sys.exit("set RECEPTIONIST_SECRET (the secret registered with the number, 16+ characters)")
    app = Receptionist(
        secret,
        Store(a.db),
        a.callbridge,
        os.environ.get("CALLBRIDGE_API_TOKEN", ""),
        a.on_call,
        a.cascaded,
        a.call_back_missed,
    )
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), make_handler(app))
    log(f"listening on http://127.0.0.1:{srv.server_address[1]}/")
    srv.serve_forever()


if __name__ == "__main__":
    main()
