"""mistral_tekken.py: tekken files for Mistral tokenizer versions v7, v11 and v13, made at test
time from the tekken file inside the installed mistral-common package (nothing committed).

The package ships only v3 tekken files (tekken_240718.json, tekken_240911.json) without a
"special_tokens" list: mistral-common then uses its 20 default control tokens, and it refuses a
version above v7 without the list. A fixture is that file with config.version set and a
"special_tokens" list holding the defaults (ranks 0..19, the ids every tekken file has), then
the tokens v11 / v13 need at the ranks Mistral's published v11+ files give them ([ARGS] 32,
[CALL_ID] 33, [THINK] 34, [/THINK] 35, audio 24..26), and "<SPECIAL_i>" fillers up to
default_num_special_tokens, as mistral-common itself fills them."""
import json
from pathlib import Path

EXTRA = {24: "[AUDIO]", 25: "[BEGIN_AUDIO]", 26: "[TRANSCRIBE]", 32: "[ARGS]", 33: "[CALL_ID]", 34: "[THINK]",
         35: "[/THINK]"}


def package_tekken():
    """the v3 tekken file inside mistral-common, or None"""
    try:
        import mistral_common
    except ImportError:
        return None
    p = Path(mistral_common.__file__).parent / "data" / "tekken_240911.json"
    return p if p.exists() else None


def make_tekken(version, out_dir):
    """write tekken_<version>.json into out_dir (a fixture for `version`, e.g. "v11"); its path"""
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer
    src = package_tekken()
    d = json.loads(src.read_text())
    d["config"]["version"] = version
    n = d["config"]["default_num_special_tokens"]
    specials = [{"rank": t["rank"], "token_str": str(t["token_str"].value if hasattr(t["token_str"], "value")
                                                     else t["token_str"]), "is_control": True}
                for t in Tekkenizer.DEPRECATED_SPECIAL_TOKENS]
    for r in range(len(specials), n):
        specials.append({"rank": r, "token_str": EXTRA.get(r, f"<SPECIAL_{r}>"), "is_control": True})
    d["special_tokens"] = specials
    p = Path(out_dir) / f"tekken_{version}.json"
    p.write_text(json.dumps(d))
    return p
