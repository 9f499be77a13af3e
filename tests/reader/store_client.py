#!/usr/bin/env python3
"""Reads an object store with clients independent of crmdump: boto3 for S3, the Azure SDK
for Azure Blob (Azurite), and the Cloud Storage JSON API over plain HTTP for GCS
(fake-gcs-server).

    store_client.py download KIND ENDPOINT BUCKET PREFIX DEST   every object under PREFIX into
                                                                DEST; prints the keys (JSON)
    store_client.py list KIND ENDPOINT BUCKET PREFIX            the keys under PREFIX (JSON)
    store_client.py get KIND ENDPOINT BUCKET KEY                the object's bytes; exit 3 if none
    store_client.py create KIND ENDPOINT BUCKET                 creates the bucket (container)

KIND is s3, azure or gcs; keys are printed relative to PREFIX.
"""
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class Missing(Exception):
    pass


class S3:
    def __init__(self, endpoint, bucket):
        import boto3

        self.c = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test",
                              aws_secret_access_key="test", region_name="us-east-1")
        self.bucket = bucket

    def create(self):
        self.c.create_bucket(Bucket=self.bucket)

    def keys(self, prefix):
        for page in self.c.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"]

    def get(self, key):
        try:
            return self.c.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.c.exceptions.NoSuchKey:
            raise Missing(key)


class Azure:
    def __init__(self, endpoint, bucket):
        from azure.storage.blob import BlobServiceClient

        cs = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
              f"BlobEndpoint={endpoint}/devstoreaccount1;")
        self.container = BlobServiceClient.from_connection_string(cs).get_container_client(bucket)

    def create(self):
        self.container.create_container()

    def keys(self, prefix):
        for blob in self.container.list_blobs(name_starts_with=prefix):
            yield blob.name

    def get(self, key):
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.container.download_blob(key).readall()
        except ResourceNotFoundError:
            raise Missing(key)


class Gcs:
    def __init__(self, endpoint, bucket):
        self.endpoint, self.bucket = endpoint, bucket

    def _call(self, method, path, body=None):
        request = urllib.request.Request(self.endpoint + path, data=body, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request) as answer:
            return answer.read()

    def create(self):
        self._call("POST", "/storage/v1/b?project=crmdump", json.dumps({"name": self.bucket}).encode())

    def keys(self, prefix):
        token = None
        while True:
            query = {"prefix": prefix, **({"pageToken": token} if token else {})}
            page = json.loads(self._call("GET", f"/storage/v1/b/{self.bucket}/o?{urllib.parse.urlencode(query)}"))
            for item in page.get("items", []):
                yield item["name"]
            token = page.get("nextPageToken")
            if not token:
                return

    def get(self, key):
        try:
            return self._call("GET", f"/storage/v1/b/{self.bucket}/o/{urllib.parse.quote(key, safe='')}?alt=media")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                raise Missing(key)
            raise


STORES = {"s3": S3, "azure": Azure, "gcs": Gcs}


def main():
    command, kind, endpoint, bucket = sys.argv[1:5]
    store = STORES[kind](endpoint, bucket)
    if command == "create":
        return store.create()
    if command == "get":
        try:
            sys.stdout.buffer.write(store.get(sys.argv[5]))
        except Missing:
            sys.exit(3)
        return
    prefix = sys.argv[5].rstrip("/") + "/"
    keys = sorted(k[len(prefix):] for k in store.keys(prefix))
    if command == "download":
        dest = sys.argv[6]
        for rel in keys:
            path = os.path.join(dest, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(store.get(prefix + rel))
    json.dump(keys, sys.stdout)


if __name__ == "__main__":
    main()
