from gateway.limits import TokenBucket


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
