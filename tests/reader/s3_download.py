#!/usr/bin/env python3
"""Downloads every object under s3://BUCKET/PREFIX with boto3 (an S3 client independent of
crmdump) into DEST, keeping the keys' relative paths, and prints the keys as JSON.
Usage: s3_download.py ENDPOINT BUCKET PREFIX DEST"""
import json
import os
import sys

import boto3

endpoint, bucket, prefix, dest = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
keys = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
    for obj in page.get("Contents", []):
        rel = obj["Key"][len(prefix.rstrip("/")) + 1 :]
        path = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        s3.download_file(bucket, obj["Key"], path)
        keys.append(rel)
json.dump(sorted(keys), sys.stdout)
