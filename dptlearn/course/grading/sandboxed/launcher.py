"""dptlearn-grade's kernel launcher: jupyter_client starts this instead of ipykernel.

It asks the warm-kernel fork server (``warm.py``) for a freshly forked kernel, forwards signals
(interrupts, terminations) to it and exits with its status, so the kernel manager's liveness
checks, interrupts and kills work as for a plain kernel. The server SIGKILLs the kernel as soon
as this launcher's connection closes. If the server cannot be reached, the launcher execs the
plain ``ipykernel_launcher`` in its place. Run as ``python -I -S launcher.py SERVER_PID SOCKET
-f CONNECTION_FILE``: standard library only.
"""
import errno
import json
import os
import signal
import socket
import struct
import sys
import time

REPLY_TIMEOUT_S = 40    # the server is still importing (or stuck): start a plain kernel


def plain():
    os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher"] + sys.argv[3:])


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def main():
    server, path, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + 30
    while True:                                   # the server may not have bound its socket yet
        try:
            sock.connect(path)
            break
        except OSError as exc:
            if exc.errno != errno.ENOENT or time.monotonic() > deadline or not alive(server):
                plain()
            time.sleep(0.05)
    req = json.dumps({"cwd": os.getcwd(), "env": dict(os.environ), "args": args}).encode()
    try:
        socket.send_fds(sock, [struct.pack("!Q", len(req)) + req], [0, 1, 2])
        sock.settimeout(REPLY_TIMEOUT_S)
        reply = sock.makefile("rb")
        pid = json.loads(reply.readline())["pid"]
    except (OSError, ValueError, KeyError):
        sock.close()
        plain()
    sock.settimeout(None)

    def forward(signum, frame):
        try:
            os.kill(pid, signum)
        except OSError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)
    line = reply.readline()                       # {"status": ...} once the child has ended
    status = json.loads(line)["status"] if line else 1
    os._exit(status if status >= 0 else 128 - status)


if __name__ == "__main__":
    main()
