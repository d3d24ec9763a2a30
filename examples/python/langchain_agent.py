"""An example LangChain agent under an allot token budget, without network.

A fake chat model (no provider, no network) answers each question and says
how many tokens it used (``usage_metadata``). The model's rate limiter is
``allot.langchain.AllotRateLimiter``: before each call it reserves an
estimate of 1500 tokens at the allot daemon; the limiter's callback handler
settles the reservation with the tokens the call really used. The agent's
budget (examples/python-fleet.toml) is smaller than what it wants to spend
in a minute, so the limiter is refused and visibly waits until the budget's
window frees enough, then goes on.

Run by examples/python-fleet.toml (needs ``pip install ./clients/python[langchain]``).
"""

import signal
import sys
import time
from typing import Any, List, Optional

import httpx
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

import allot
from allot.langchain import AllotRateLimiter


def log(msg):
    print(f"[lc-writer] {msg}", flush=True)


class FakeChat(BaseChatModel):
    """Answers with a canned text and a token count that grows with the question."""

    @property
    def _llm_type(self) -> str:
        return "fake-offline"

    def _generate(self, messages: List[BaseMessage], stop: Optional[List[str]] = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        question = str(messages[-1].content)
        time.sleep(0.2)  # thinking
        inp, out = 200 + 10 * len(question), 900
        msg = AIMessage(content=f"An answer to {question!r}.",
                        usage_metadata={"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out})
        return ChatResult(generations=[ChatGeneration(message=msg)])


stopping = False


def on_sigterm(signum, frame):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, on_sigterm)

limiter = AllotRateLimiter(allot.Client(), tokens=1500, usd=0.003, max_wait=90,
                           settle=lambda u: {"tokens": u["total_tokens"], "usd": u["total_tokens"] * 2e-6})
model = FakeChat(rate_limiter=limiter, callbacks=limiter.callbacks())

n = 0
while not stopping:
    n += 1
    before_refusals, before_wait = limiter.refusals, limiter.waited
    t0 = time.monotonic()
    try:
        answer = model.invoke(f"question {n}: what should we read next?")
    except allot.BudgetExceeded as e:
        log(f"call {n}: gave up: {e}")
        break
    except (allot.AllotError, httpx.HTTPError) as e:
        if stopping:  # allot is stopping the fleet: leave quietly
            break
        raise
    took = time.monotonic() - t0
    usage = answer.usage_metadata or {}
    waited = limiter.waited - before_wait
    note = f" after {limiter.refusals - before_refusals} refusal(s), {waited:.1f} s waiting for the budget" if waited else ""
    log(f"call {n}: {usage.get('total_tokens')} tokens used of 1500 reserved, settled ({took:.1f} s){note}")
log(f"stopping after {n} calls, {limiter.settled} settled, {limiter.refusals} refusals")
sys.exit(0)
