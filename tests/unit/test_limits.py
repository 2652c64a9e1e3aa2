from gateway.limits import AddressLimits, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_burst_then_rate():
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=20, clock=clock)
    assert sum(bucket.allow() for _ in range(50)) == 20
    clock.now += 0.5
    assert sum(bucket.allow() for _ in range(50)) == 5
    clock.now += 100
    assert sum(bucket.allow() for _ in range(50)) == 20  # never more than the burst


def test_bucket_says_when_to_retry_and_when_it_is_idle():
    clock = Clock()
    bucket = TokenBucket(rate=0.5, burst=1, clock=clock)
    assert bucket.idle() and bucket.allow() and not bucket.allow()
    assert bucket.retry_after() == 2 and not bucket.idle()
    clock.now += 2
    assert bucket.idle()


def test_address_limits_rate_per_address():
    clock = Clock()
    limits = AddressLimits(rate=1, burst=2, max_in_flight=5, clock=clock)
    assert limits.request("a") is None and limits.request("a") is None
    refusal = limits.request("a")
    assert refusal is not None and refusal.status == 429 and refusal.headers == {"Retry-After": "1"}
    assert limits.request("b") is None  # another address has its own bucket


def test_address_limits_in_flight_per_address():
    limits = AddressLimits(rate=100, burst=100, max_in_flight=2, clock=Clock())
    assert limits.acquire("a") is None and limits.acquire("a") is None
    refusal = limits.acquire("a")
    assert refusal is not None and refusal.status == 429 and "2" in refusal.reason
    assert limits.acquire("b") is None
    limits.release("a")
    assert limits.acquire("a") is None
    limits.release("nobody")  # harmless


def test_address_limits_forget_idle_addresses():
    clock = Clock()
    limits = AddressLimits(rate=10, burst=20, max_in_flight=2, clock=clock)
    for i in range(1000):
        limits.request(f"10.0.{i // 256}.{i % 256}")
    limits.acquire("busy")
    assert len(limits) == 1001
    clock.now += 5  # every bucket has refilled
    limits.request("new")
    assert len(limits) == 2  # the busy address (a call in flight) and the new one
    limits.release("busy")
    clock.now += 5
    limits.request("new")
    assert len(limits) == 1
