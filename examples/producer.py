"""Send simulated temperatures of three devices to streamcalc, the way a gateway would.

    python examples/producer.py                 # one reading per device every second
    python examples/producer.py --count 10 --interval 0.1 --key plant-berlin

It connects to STREAMCALC_REDIS_URL (default redis://localhost:6379/0) and
writes to namespace STREAMCALC_NS (default "default"), like the command line.
``Producer`` checks every reading before it is written (a bad value fails here,
not later as a dead letter), sends each entry to its key's partition, and with
``max_lag`` waits when the workers fall behind instead of filling Redis.
"""

from __future__ import annotations

import argparse
import os
import random
import time

import redis

from streamcalc.producer import Producer

DEVICES = ("dev1", "dev2", "dev3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=0, help="entries to send (0: until Ctrl-C)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between entries")
    parser.add_argument("--key", default=None, help="the plant's @key (default: none)")
    options = parser.parse_args()

    client = redis.Redis.from_url(
        os.environ.get("STREAMCALC_REDIS_URL", "redis://localhost:6379/0")
    )
    ns = os.environ.get("STREAMCALC_NS", "default")
    producer = Producer(client, ns, key=options.key, max_lag=100_000, on_full="wait")

    temps = {device: random.uniform(55.0, 65.0) for device in DEVICES}
    sent = 0
    try:
        while options.count == 0 or sent < options.count:
            for device in DEVICES:  # a random walk around 60 °C
                temps[device] += random.uniform(-0.5, 0.5)
            readings = {f"{device}.temp": round(temp, 2) for device, temp in temps.items()}
            entry_id = producer.send(readings)  # @ts: the entry ID's time, as none is given
            sent += 1
            print(entry_id, " ".join(f"{name}={value}" for name, value in readings.items()))
            time.sleep(options.interval)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()


if __name__ == "__main__":
    main()
