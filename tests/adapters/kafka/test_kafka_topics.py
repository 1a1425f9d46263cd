"""The read_committed view the tests and the events service rely on."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from adapters.kafka.testing import create_topic, unique_name
from adapters.kafka.topics import read_committed


async def test_a_settled_read_sees_a_transaction_the_moment_its_commit_returns(kafka: str) -> None:
    topic = await create_topic(kafka, unique_name("settled"), partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka, transactional_id=unique_name("probe"))
    await producer.start()
    try:
        for n in range(10):
            async with producer.transaction():
                await producer.send_and_wait(topic, b"%d" % n, partition=n % 2)
            # The commit's markers may still be on their way: a settled read waits for them.
            read = await read_committed(kafka, [topic], settled=True)
            assert sorted(int(m.value or b"") for m in read) == list(range(n + 1))
    finally:
        await producer.stop()


async def test_an_open_transaction_is_invisible_and_an_aborted_one_never_appears(kafka: str) -> None:
    topic = await create_topic(kafka, unique_name("open"))
    producer = AIOKafkaProducer(bootstrap_servers=kafka, transactional_id=unique_name("probe"))
    await producer.start()
    try:
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"open")
        assert await read_committed(kafka, [topic]) == []  # not settled: reads up to the open transaction
        await producer.abort_transaction()
        assert await read_committed(kafka, [topic], settled=True) == []
    finally:
        await producer.stop()
