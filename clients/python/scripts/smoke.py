"""Manual smoke run against a live daemon, as its operator (not a pytest test).

allot daemon --socket S --state DIR/state.db --cgroup-name NAME, then: python smoke.py S
Starts an agent "smoke" (sleep 60) drawing on a pool "money", exercises most methods, terminates it.
"""
import sys, time, asyncio, allot
sock = sys.argv[1]
c = allot.Client(socket=sock)
print("healthz", c.healthz(), "readyz", c.readyz())
print("pool", c.put_pool("money", {"usd_micros": {"hard": "1M", "calendar": "month"}, "tokens": "10k/day"})["pool"])
r = c.run(["sleep", "60"], name="smoke", group="lightweight_agent", pools=["money"])
print("run", r.get("id"), r.get("pid"))
print("ps", [(a.id, a.state) for a in c.ps()])
c.agent_id = "smoke"
me = c.me()
print("me", me.agent.state, me.compliance.status, me.agent.budgets)
with c.reserve(tokens=4000, usd=0.012) as res:
    print("reserved", res.id, res.resources, res.info.levels)
    s = res.settle(tokens=3100)
    print("settled", [(l.resource, l.actual, l.returned) for l in s.settled])
with c.reserve(tokens=1000) as res2:
    pass
print("released", res2.closed)
try:
    c.reserve(tokens=7000)
    c.reserve(tokens=1)
except allot.BudgetExceeded as e:
    print("refused", e.level, e.resource, e.retry_after, e)
try:
    c.reserve(tokens=10**7)
except allot.BudgetExceeded as e:
    print("refused over limit", e.retry_after)
print("report", c.report(tokens=10)["tokens"].value)
b = c.budgets("smoke")
print("budgets", [(v.level, v.resource, v.spent, v.reserved, v.remaining) for v in b.budgets], b.open_reservations)
print("pools", [v.level for v in c.pools().budgets], c.pools("money").budgets[0].window.text)
print("throttle", c.throttle("smoke", "100m").outcome, "clear", c.clear("smoke").outcome)
print("suspend", c.suspend("smoke").outcome, "resume", c.resume("smoke", force=True).outcome)
print("set_quota", type(c.set_quota("smoke", {"memory.hard": "300Mi"})))
print("groups", len(c.groups()), "history", len(c.history("smoke")), "recs", c.recommendations())
print("report_of", type(c.report_of("smoke")), c.report_of("smoke", format="text")[:40])
try:
    c.agent("nope")
except allot.NotFound as e:
    print("404", e)
try:
    c.set_quota("smoke", {"memory.soft": "1Gi", "memory.hard": "1Mi"})
except allot.Invalid as e:
    print("422", e.field)
async def main():
    async with allot.AsyncClient(socket=sock, agent_id="smoke") as ac:
        print("async me", (await ac.me()).agent.id)
        async with ac.reserve(tokens=1) as r:
            print("async reserved", r.id)
        print("async ps", len(await ac.ps()))
asyncio.run(main())
@allot.governed(tokens=5, client=c)
def work(): return "w"
print("governed", work())
print("terminate", c.terminate("smoke").outcome)
print("openapi paths", len(c.openapi()["paths"]))
