-- Multipart uploads into the S3 blob store that are under way. An upload is
-- recorded once S3 has given it an id and before its first part is sent,
-- and forgotten once it is committed or aborted, so that what a crashed
-- instance left can be aborted later: S3 bills for the parts of an
-- unfinished upload, and object_store cannot list them. An upload recorded
-- more than a day ago belongs to no running request; the server's startup
-- sweep aborts it (and deletes its object if the commit landed but the
-- package row never did).
CREATE TABLE blob_uploads (
    -- The object's key in the bucket, the prefix included.
    object_key TEXT NOT NULL,
    -- S3's UploadId.
    upload_id TEXT NOT NULL,
    -- The key the package's row holds once it is written (under the prefix).
    blob_key TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    -- Which server instance started it (host and process), for operators.
    instance TEXT NOT NULL,
    PRIMARY KEY (object_key, upload_id)
);

CREATE INDEX blob_uploads_by_start ON blob_uploads (started_at);
