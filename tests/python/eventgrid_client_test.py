"""Publishes to a wasmgrid topic with Microsoft's own Event Grid client.

`EventGridPublisherClient(topic_url, AzureKeyCredential(topic_key))`, unchanged,
sends a batch of CloudEvents (`application/cloudevents-batch+json`) and a batch of
EventGridEvents (`application/json`, Event Grid schema) with the key in the
`aeg-sas-key` header and an `api-version` query. Run by
tests/integration/events.rs, which then checks that each event reached its
handler.

Usage: eventgrid_client_test.py --url http://127.0.0.1:PORT --topic NAME --key KEY
"""

import argparse
import sys

from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent, EventGridPublisherClient


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    endpoint = f"{args.url}/v1/topics/{args.topic}/events"
    client = EventGridPublisherClient(endpoint, AzureKeyCredential(args.key))

    client.send(
        [
            CloudEvent(
                source="/azure-sdk/python",
                type="com.example.ai.InferenceCompleted",
                subject="/models/resnet",
                data={"confidence": 0.97},
                id="azure-ce-1",
                extensions={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
            ),
            CloudEvent(
                source="/azure-sdk/python",
                type="com.example.ai.InferenceCompleted",
                data={"confidence": 0.5},
                id="azure-ce-2",
            ),
        ]
    )
    print("sent 2 CloudEvents")

    client.send(
        [
            EventGridEvent(
                subject="/orders/42",
                event_type="Contoso.Orders.OrderShipped",
                data={"order": 42},
                data_version="1.0",
                id="azure-eg-1",
            )
        ]
    )
    print("sent 1 EventGridEvent")

    bad = EventGridPublisherClient(endpoint, AzureKeyCredential("wrong-key"))
    try:
        bad.send([CloudEvent(source="/x", type="t", data={}, id="never")])
    except (ClientAuthenticationError, HttpResponseError) as e:
        print(f"wrong key refused: {type(e).__name__}")
    else:
        print("a wrong key was accepted", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
