//! Dashboard sessions: the SQL of these [`Store`](crate::Store) methods,
//! written once for both backends as inherent methods of the store, which
//! the `Store` impl of [`impl_store!`](super::impl_store) calls. Expanded
//! inside `impl_store!`, so it sees that macro's imports.

/// Dashboard sessions, for `$store` on `$db`.
macro_rules! sql_sessions {
    ($store:ident, $db:ty, $begin:literal) => {
        impl $store {
            async fn insert_session(&self, session: &NewSession) -> StoreResult<()> {
                sqlx::query::<$db>(
                    "INSERT INTO dashboard_sessions \
                     (secret_sha256, token_id, csrf, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&session.secret_sha256[..])
                .bind(session.token_id.to_string())
                .bind(session.csrf.as_str())
                .bind(millis(session.created_at))
                .bind(millis(session.expires_at))
                .execute(&self.pool)
                .await
                .map_err(|e| classify(e, "a session with this secret", "its API token"))?;
                Ok(())
            }

            async fn session_by_hash(
                &self,
                secret_sha256: &[u8; 32],
                now: DateTime<Utc>,
            ) -> StoreResult<Option<SessionRecord>> {
                // The join is the revocation check: a deleted token's
                // sessions are gone with it (ON DELETE CASCADE), and an
                // expired session is as good as none.
                let row = sqlx::query_as::<$db, SessionRow>(
                    "SELECT t.id, t.name, t.role, t.created_at, t.secret_sha256, \
                     s.csrf, s.expires_at \
                     FROM dashboard_sessions s JOIN api_tokens t ON t.id = s.token_id \
                     WHERE s.secret_sha256 = $1 AND s.expires_at > $2",
                )
                .bind(&secret_sha256[..])
                .bind(millis(now))
                .fetch_optional(&self.pool)
                .await?;
                row.map(SessionRow::into_record).transpose()
            }

            async fn delete_session(&self, secret_sha256: &[u8; 32]) -> StoreResult<bool> {
                let result =
                    sqlx::query::<$db>("DELETE FROM dashboard_sessions WHERE secret_sha256 = $1")
                        .bind(&secret_sha256[..])
                        .execute(&self.pool)
                        .await?;
                Ok(result.rows_affected() > 0)
            }

            async fn delete_expired_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64> {
                let result =
                    sqlx::query::<$db>("DELETE FROM dashboard_sessions WHERE expires_at <= $1")
                        .bind(millis(now))
                        .execute(&self.pool)
                        .await?;
                Ok(result.rows_affected())
            }
        }
    };
}

pub(crate) use sql_sessions;
