"""The archive in an S3-compatible bucket (`--out s3://BUCKET/PREFIX`): S3, R2, MinIO, B2.

target (pure: the URL, endpoint, region) <- client (aiobotocore, errors, retries) <- upload,
manifest, lease, state <- archive (the Archive of the pipeline) <- run, verify.
"""
