//! Target expressions compiled to SQL, and the order keys of installed
//! versions: the SQL of [`VersionKeyStore`](crate::VersionKeyStore) and of
//! the [`DeviceFilter::expression`](crate::DeviceFilter::expression) hook,
//! written once for both backends. Expanded inside `impl_store!`, so it
//! sees that macro's imports.
//!
//! The compiled condition must agree with
//! [`TargetExpr::matches`](airlift_protocol::target_expr::TargetExpr::matches)
//! on every device, so each term is written to be two-valued (true or
//! false, never NULL, which `NOT` would keep NULL where memory says true):
//! what a device carries is tested with `EXISTS`, its type with
//! `IS NOT NULL AND …`. Versions compare by their keys, as bytes (the
//! column's collation is "C" on PostgreSQL, SQLite's default is binary).
//! Wildcards: `LIKE … ESCAPE` on PostgreSQL, `GLOB` on SQLite (whose `LIKE`
//! ignores ASCII case); both match whole values, character by character.

/// Expression filters and version keys for `$store` on `$db`.
macro_rules! sql_expr {
    ($store:ident, $db:ty, $begin:literal) => {
        impl $store {
            /// Whether `$db` is PostgreSQL (else SQLite).
            fn is_postgres() -> bool {
                <$db as sqlx::Database>::NAME == "PostgreSQL"
            }

            /// Appends `expr` as one parenthesised condition on `devices`.
            fn push_target_expr(
                query: &mut QueryBuilder<'_, $db>,
                expr: &airlift_protocol::target_expr::TargetExpr,
            ) {
                use airlift_protocol::target_expr::TargetExpr;
                match expr {
                    TargetExpr::Or(items) | TargetExpr::And(items) => {
                        let joiner = if matches!(expr, TargetExpr::Or(_)) {
                            " OR "
                        } else {
                            " AND "
                        };
                        query.push("(");
                        for (index, item) in items.iter().enumerate() {
                            if index > 0 {
                                query.push(joiner);
                            }
                            Self::push_target_expr(query, item);
                        }
                        query.push(")");
                    }
                    TargetExpr::Not(inner) => {
                        query.push("(NOT ");
                        Self::push_target_expr(query, inner);
                        query.push(")");
                    }
                    TargetExpr::Term(term) => Self::push_target_term(query, term),
                }
            }

            fn push_target_term(
                query: &mut QueryBuilder<'_, $db>,
                term: &airlift_protocol::target_expr::Term,
            ) {
                use airlift_protocol::target_expr::{Equality, Term};
                match term {
                    Term::Tag(pattern) => {
                        query.push(
                            "EXISTS (SELECT 1 FROM device_tags t \
                             WHERE t.device_id = devices.id AND ",
                        );
                        Self::push_pattern(query, "t.tag", pattern);
                        query.push(")");
                    }
                    Term::Attribute { key, op, value } => {
                        query
                            .push(
                                "EXISTS (SELECT 1 FROM device_attributes a \
                                 WHERE a.device_id = devices.id AND a.key = ",
                            )
                            .push_bind(key.clone())
                            .push(if *op == Equality::Eq {
                                " AND "
                            } else {
                                " AND NOT "
                            });
                        Self::push_pattern(query, "a.value", value);
                        query.push(")");
                    }
                    Term::DeviceType { op, value } => {
                        query.push(if *op == Equality::Eq {
                            "(devices.device_type IS NOT NULL AND "
                        } else {
                            "(devices.device_type IS NOT NULL AND NOT "
                        });
                        Self::push_pattern(query, "devices.device_type", value);
                        query.push(")");
                    }
                    Term::Status { op, status } => {
                        query
                            .push(if *op == Equality::Eq {
                                "devices.status = "
                            } else {
                                "devices.status <> "
                            })
                            .push_bind(status.as_str());
                    }
                    Term::Installed { name, op, version } => {
                        use airlift_protocol::target_expr::Comparison;
                        let op = match op {
                            Comparison::Ne => "<>",
                            other => other.as_str(),
                        };
                        query
                            .push(
                                "EXISTS (SELECT 1 FROM device_installed i \
                                 WHERE i.device_id = devices.id AND i.name = ",
                            )
                            .push_bind(name.clone())
                            .push(" AND i.version_key <> '' AND i.version_key ")
                            .push(op)
                            .push(" ")
                            .push_bind(version.key().to_owned());
                        if Self::is_postgres() {
                            query.push(" COLLATE \"C\"");
                        }
                        query.push(")");
                    }
                }
            }

            /// `column` matches `pattern`: `=` when it has no wildcard.
            fn push_pattern(
                query: &mut QueryBuilder<'_, $db>,
                column: &'static str,
                pattern: &airlift_protocol::target_expr::Pattern,
            ) {
                use airlift_protocol::target_expr::Piece;
                query.push("(").push(column);
                if let Some(exact) = pattern.as_exact() {
                    query.push(" = ").push_bind(exact.to_owned()).push(")");
                    return;
                }
                let postgres = Self::is_postgres();
                let mut text = String::new();
                for piece in pattern.pieces() {
                    match (piece, postgres) {
                        (Piece::AnyRun, true) => text.push('%'),
                        (Piece::AnyChar, true) => text.push('_'),
                        (Piece::AnyRun, false) => text.push('*'),
                        (Piece::AnyChar, false) => text.push('?'),
                        (Piece::Text(literal), true) => {
                            for c in literal.chars() {
                                if matches!(c, '%' | '_' | '\\') {
                                    text.push('\\');
                                }
                                text.push(c);
                            }
                        }
                        (Piece::Text(literal), false) => {
                            for c in literal.chars() {
                                match c {
                                    '*' => text.push_str("[*]"),
                                    '?' => text.push_str("[?]"),
                                    '[' => text.push_str("[[]"),
                                    c => text.push(c),
                                }
                            }
                        }
                    }
                }
                if postgres {
                    query.push(" LIKE ").push_bind(text).push(" ESCAPE '\\')");
                } else {
                    query.push(" GLOB ").push_bind(text).push(")");
                }
            }

            /// Writes the installed versions of a device with their keys.
            async fn insert_installed(
                conn: &mut Conn,
                device_id: &str,
                installed: &BTreeMap<String, String>,
            ) -> Result<(), sqlx::Error> {
                let entries: Vec<_> = installed.iter().collect();
                for chunk in entries.chunks(INSERT_CHUNK) {
                    let mut query = QueryBuilder::<$db>::new(
                        "INSERT INTO device_installed (device_id, name, version, version_key) ",
                    );
                    query.push_values(chunk, |mut row, (name, version)| {
                        let key =
                            airlift_protocol::target_expr::version_key(version).unwrap_or_default();
                        row.push_bind(device_id)
                            .push_bind(name.as_str())
                            .push_bind(version.as_str())
                            .push_bind(key);
                    });
                    query.build().execute(&mut *conn).await?;
                }
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::VersionKeyStore for $store {
            async fn fill_version_keys(&self) -> StoreResult<u64> {
                // By distinct version, not by row: a fleet runs few
                // versions, so a million devices' inventories are keyed in a
                // few statements. One statement a row kept an instance
                // starting on 3 million unkeyed rows from listening for
                // longer than a benchmark would wait (minutes). `column1…`
                // are the names both databases give a VALUES list's columns.
                let mut keyed = 0;
                loop {
                    let versions: Vec<String> = sqlx::query_scalar::<$db, String>(
                        "SELECT DISTINCT version FROM device_installed \
                         WHERE version_key IS NULL LIMIT $1",
                    )
                    .bind(i64::from($crate::expr::FILL_BATCH))
                    .fetch_all(&self.pool)
                    .await?;
                    if versions.is_empty() {
                        return Ok(keyed);
                    }
                    let mut query = QueryBuilder::<$db>::new(
                        "UPDATE device_installed SET version_key = v.order_key FROM \
                         (SELECT column1 AS version, column2 AS order_key FROM (",
                    );
                    query.push_values(&versions, |mut row, version| {
                        let key =
                            airlift_protocol::target_expr::version_key(version).unwrap_or_default();
                        row.push_bind(version.as_str()).push_bind(key);
                    });
                    // Only rows still unkeyed: an inventory recorded
                    // meanwhile wrote its own key (the same one).
                    query.push(
                        ") AS t) AS v WHERE device_installed.version = v.version \
                         AND device_installed.version_key IS NULL",
                    );
                    keyed += query.build().execute(&self.pool).await?.rows_affected();
                }
            }
        }
    };
}

pub(crate) use sql_expr;
