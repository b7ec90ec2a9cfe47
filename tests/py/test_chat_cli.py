"""`kiln chat` non-interactive: a piped question is one user message, answered once (greedy),
with the default model SmolLM2-135M-Instruct (ChatML from its GGUF template). The answer must
mention Paris and be identical across two runs. Skips loudly without the binary or model."""
import subprocess


def ask(kiln, model, text):
    r = subprocess.run([kiln, "chat", "--model", model, "-n", "48", "--max-model-len", "1024",
                        "--max-num-seqs", "1"], input=text, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_chat_answers_paris_deterministically(kiln, default_gguf):
    a = ask(kiln, default_gguf, "What is the capital of France?\n")
    b = ask(kiln, default_gguf, "What is the capital of France?\n")
    assert "Paris" in a, a
    assert a == b


def test_chat_unknown_template_is_an_error(kiln, default_gguf):
    r = subprocess.run([kiln, "chat", "--model", default_gguf, "--chat-template", "nope", "--max-model-len", "256"],
                       input="hi", capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "unknown chat template" in r.stderr
