"""serve_util.py: start and stop `kiln serve` for the reliability and hostile-input tests
(test_server_reliability.py, test_server_hostile.py).

A server gets a free port, --served-model-name kiln-test-model, and is stopped with SIGTERM (then
SIGKILL); every wait is bounded. The model: the default GGUF (SmolLM2-135M-Instruct, env
KILN_DEFAULT_GGUF or ~/.cache/kiln, a chat model) when present, else ../shared/models/stories260K
(completions only); pick_model returns None when neither exists, and the callers skip loudly.
"""
import http.client
import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KILN = os.environ.get("KILN_BIN", str(ROOT / "build" / "kiln"))
SHARED = Path(os.environ.get("KILN_SHARED", str(ROOT.parent / "shared")))
NAME = "kiln-test-model"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_gguf():
    env = os.environ.get("KILN_DEFAULT_GGUF")
    if env and os.path.exists(env):
        return env
    p = Path(os.environ.get("KILN_CACHE", str(Path.home() / ".cache" / "kiln"))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return str(p) if p.exists() else None


def stories_args():
    st = SHARED / "models" / "stories260K"
    if (st / "stories260K.bin").exists():
        return ["--model", str(st / "stories260K.bin"), "--tokenizer", str(st / "tok512.bin")]
    return None


def pick_model(prefer_small=False):
    """(name, args) of the model to serve, or None."""
    g = default_gguf()
    s = stories_args()
    order = [("stories260K", s), ("SmolLM2", ["--model", g] if g else None)]
    if not prefer_small:
        order.reverse()
    for name, args in order:
        if args:
            return name, args
    return None


class Srv:
    def __init__(self, args, extra=(), env=None, cafile=None, host="127.0.0.1"):
        self.port = free_port()
        self.host = host
        self.cafile = cafile
        cmd = [KILN, "serve", *args, "--port", str(self.port), "--served-model-name", NAME, *extra]
        if host:
            cmd += ["--host", host]
        self.log = open(f"/tmp/kiln-serve-{self.port}.log", "w+b")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        self.url = f"{'https' if cafile else 'http'}://127.0.0.1:{self.port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kiln serve exited with {self.proc.returncode}: {self.logtext()}")
            try:
                if self.request("GET", "/health", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("kiln serve did not become healthy in 60 s: " + self.logtext())

    def conn(self, timeout=60):
        if self.cafile:
            ctx = ssl.create_default_context(cafile=self.cafile)
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=ctx)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=60):
        """(status, headers, body bytes) over a fresh connection."""
        c = self.conn(timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, r.headers, r.read()
        finally:
            c.close()

    def logtext(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()
        return self.proc.returncode


def chat_template(name):
    """A model's own chat template (Jinja text) from the cache scripts/get_chat_templates.sh fills
    from the llama-cpp-python sdist (KILN_CHAT_TEMPLATES, else ~/.cache/kiln/chat-templates-*),
    e.g. "meta-llama-Llama-3.2-3B-Instruct.jinja"; None when it is not there."""
    dirs = [os.environ.get("KILN_CHAT_TEMPLATES", "")]
    cache = Path(os.environ.get("KILN_CACHE", os.path.expanduser("~/.cache/kiln")))
    dirs += sorted(str(p) for p in cache.glob("chat-templates-*"))
    for d in dirs:
        if d and (Path(d) / name).is_file():
            return (Path(d) / name).read_text()
    return None
