"""An example agent using the allot Python client (clients/python) under `allot up`.

It "researches" in steps: before each step it reserves an estimate of tokens
and dollars, "calls a model" (a sleep), then settles with what the step
really used, so the unused part goes back to its budget. When its budget
refuses, it sleeps the refusal's retry_after and goes on. Now and then a step
uses more than it reserved (an overrun, charged all the same), which takes
it above its hard limit: allot then asks it to scale down on its channel.
A channel thread handles throttle, scale_down, degradation and termination
requests (each acknowledged, so the operator sees the agent heard them), and
SIGTERM is deferred so that the termination handler runs before it leaves.

Run by examples/python-fleet.toml; allot gives it ALLOT_SOCKET,
ALLOT_AGENT_ID and ALLOT_EVENTS_FILE.
"""

import random
import sys
import threading
import time

import httpx

import allot

PRICE = 2e-6  # dollars a token
rng = random.Random(7)


def log(msg):
    print(f"[researcher] {msg}", flush=True)


client = allot.Client()
channel = allot.AgentChannel(client=client)
state = {"step_tokens": 1500, "stop": False}


@channel.on("throttle")
def throttled(msg):
    state["step_tokens"] = max(300, state["step_tokens"] // 2)
    log(f"throttle on {msg.fields.get('resource')}: steps of {state['step_tokens']} tokens from now on")
    return f"steps cut to {state['step_tokens']} tokens"


@channel.on("scale_down")
def scale_down(msg):
    state["step_tokens"] = max(300, state["step_tokens"] // 2)
    log(f"scale_down requested ({msg.fields}): steps of {state['step_tokens']} tokens from now on")
    return f"steps cut to {state['step_tokens']} tokens"


@channel.on("degradation")
def degrade(msg):
    log(f"degradation plan: {msg.fields.get('plan', msg.fields)}")
    return "noted the plan"


@channel.on("termination")
def terminate(msg):
    log(f"termination notice ({msg.fields.get('reason')}, grace {msg.fields.get('grace_ms')} ms): saving notes and leaving")
    state["stop"] = True
    return "notes saved"


@channel.on("*")
def other(msg):
    log(f"channel: {msg.type}")


channel.defer_sigterm()
stop_listening = threading.Event()
listener = threading.Thread(target=channel.run, kwargs={"interval": 0.2, "stop": stop_listening}, daemon=True)
listener.start()

me = client.me()
log(f"I am {me.agent.id} in group {me.agent.group}; compliance {me.compliance.status}; "
    f"tokens limit {me.quota.limits['tokens'].hard if me.quota else '?'}")
client.report(tokens=200)  # the planning prompt, spent before the loop
log("reported 200 tokens of planning")

step = 0
while not state["stop"] and not (channel.sigterm is not None and channel.sigterm.is_set()):
    step += 1
    estimate = state["step_tokens"]
    try:
        with client.reserve(tokens=estimate, usd=estimate * PRICE, ttl="30s") as r:
            time.sleep(0.3)  # the model call
            # Every fifth step a tool result was longer than expected: an overrun.
            used = estimate + 2500 if step % 5 == 0 else rng.randint(estimate // 2, estimate)
            s = r.settle(tokens=used, usd=used * PRICE)
            over = " (an overrun: charged all the same)" if used > estimate else ""
            log(f"step {step}: reserved {estimate} tokens as reservation {r.id}, settled {used}{over}")
            if s.over_limit:
                log(f"  over the limit now: {[o.level for o in s.over_limit]}")
    except allot.BudgetExceeded as e:
        if e.retry_after is None:
            log(f"step {step}: {estimate} tokens can never fit ({e}); stopping")
            break
        wait = min(e.retry_after, 3.0)
        log(f"step {step}: refused at {e.level} on {e.resource}; sleeping {wait:.1f} s (retry_after {e.retry_after:.1f} s)")
        time.sleep(wait)
    except allot.Throttled as e:
        wait = min(e.retry_after or 1.0, 3.0)
        log(f"step {step}: throttled on {e.resource}; sleeping {wait:.1f} s")
        time.sleep(wait)
    except (allot.AllotError, httpx.HTTPError):
        if state["stop"] or (channel.sigterm is not None and channel.sigterm.is_set()):
            break  # allot is stopping us
        raise

# Leave within the grace period, after the termination handler ran and acknowledged.
deadline = time.monotonic() + 2
while not state["stop"] and time.monotonic() < deadline:
    time.sleep(0.1)
stop_listening.set()
listener.join(timeout=2)  # its last poll acknowledges the notice
log("done")
sys.exit(0)
