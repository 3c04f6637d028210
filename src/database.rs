//! Opening the database: the configured URL, or the embedded cluster in `data_dir`.
//!
//! The server owns the embedded cluster for its lifetime (an exclusive lock on the data
//! directory) and stops it on shutdown. A second server on the same data directory is refused.
//! A CLI verb started while a server runs uses that server's cluster; with no server running it
//! starts the cluster itself and stops it when done.

use std::str::FromStr;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use store::cluster::{self, Cluster, ClusterOptions, DataDirLock};

use crate::config::Config;

/// Who is opening the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A long-running server: needs the data directory for itself.
    Server,
    /// A short CLI verb: shares a running server's cluster.
    Tool(&'static str),
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Tool(verb) => verb,
        }
    }
}

/// An open database: the pool, and the embedded cluster when this process owns it.
#[derive(Debug)]
pub struct Database {
    pub pool: PgPool,
    owned_cluster: Option<(Cluster, DataDirLock)>,
}

impl Database {
    pub async fn open(config: &Config, role: Role) -> anyhow::Result<Self> {
        let settings = store::PoolSettings {
            max_connections: config.database.max_connections.get(),
            acquire_timeout: config.database.acquire_timeout(),
        };
        if !config.uses_embedded_database() {
            let options = PgConnectOptions::from_str(config.database.url.expose())
                .context("database.url is not a valid PostgreSQL URL")?;
            return Ok(Self {
                pool: store::connect_lazy(options, settings),
                owned_cluster: None,
            });
        }
        let data_dir = config.data_dir.clone();
        let lock = DataDirLock::try_acquire(&data_dir, role.name())?;
        let (options, owned_cluster) = match (lock, role) {
            (Some(lock), _) => {
                let cluster = tokio::task::spawn_blocking(move || -> anyhow::Result<Cluster> {
                    let cluster = Cluster::init(&ClusterOptions {
                        data_dir,
                        durable: true,
                    })?;
                    cluster.start()?;
                    Ok(cluster)
                })
                .await??;
                (cluster.connect_options("postgres"), Some((cluster, lock)))
            }
            (None, Role::Server) => {
                return Err(cluster::ClusterError::Locked {
                    holder: DataDirLock::holder(&config.data_dir),
                    path: config.data_dir.clone(),
                }
                .into());
            }
            (None, Role::Tool(_)) => (
                cluster::running_connect_options(&config.data_dir, "postgres").with_context(
                    || {
                        format!(
                            "data directory {} is locked by {} but its cluster is not running",
                            config.data_dir.display(),
                            DataDirLock::holder(&config.data_dir)
                        )
                    },
                )?,
                None,
            ),
        };
        Ok(Self {
            pool: store::connect_lazy(options, settings),
            owned_cluster,
        })
    }

    /// Applies every pending migration; returns how many were applied.
    pub async fn migrate(&self) -> anyhow::Result<usize> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .context("connecting to the database")?;
        let before = store::applied_migrations(&mut conn).await;
        store::MIGRATOR
            .run(&mut *conn)
            .await
            .context("applying migrations")?;
        let after = store::applied_migrations(&mut conn).await;
        Ok(after.saturating_sub(before))
    }

    /// Closes the pool and stops the embedded cluster if this process started it.
    pub async fn close(self) -> anyhow::Result<()> {
        self.pool.close().await;
        if let Some((cluster, lock)) = self.owned_cluster {
            tokio::task::spawn_blocking(move || cluster.stop()).await??;
            drop(lock);
        }
        Ok(())
    }
}
