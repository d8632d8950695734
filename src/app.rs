//! Start-up and shutdown of the whole server: the store, the delivery
//! engine and the HTTP API, in that order, and the reverse on stop.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, middleware, web};
use log::info;

use crate::api::{self, AppState};
use crate::config::{Config, ConfigError};
use crate::delivery::{Delivery, Settings};
use crate::maintenance::Pruner;
use crate::store::{AccountError, Store, StoreError};

/// Domain and user created on an empty database.
pub const FIRST_DOMAIN: &str = "localhost";
pub const FIRST_USER: &str = "admin";
/// File in the data directory that receives the first user's key.
pub const FIRST_KEY_FILE: &str = "admin.key";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "cannot open the database {path}: {source}; check that the file and its directory are writable by hookd and the file system is not full or read-only"
    )]
    OpenDatabase { path: PathBuf, source: StoreError },
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error("cannot listen on {address}: {source}; choose a free address with `listen`")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot write the first API key to {path}: {source}")]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Server(std::io::Error),
}

/// A built server, bound and ready to run.
pub struct Application {
    server: Server,
    address: SocketAddr,
    store: Store,
    delivery: Delivery,
    pruner: Pruner,
    shutdown_grace: Duration,
}

impl Application {
    /// Opens the database, creates the first user on an empty one, starts
    /// delivery and binds the API. Must run inside an actix system. With
    /// `handle_signals`, SIGTERM and SIGINT stop the server gracefully.
    pub fn build(config: Config, handle_signals: bool) -> Result<Application, StartError> {
        let database = config.database_path();
        let store = Store::open(&database, config.synchronous).map_err(|source| {
            StartError::OpenDatabase {
                path: database.clone(),
                source,
            }
        })?;
        info!("database {} opened", database.display());
        create_first_user(&store, &config)?;

        let settings = Settings::from_config(&config)?;
        let guard = settings.guard.clone();
        let delivery = Delivery::start(store.clone(), settings)?;

        let listener = TcpListener::bind(config.listen).map_err(|source| StartError::Listen {
            address: config.listen,
            source,
        })?;
        let address = listener.local_addr().map_err(StartError::Server)?;

        let state = web::Data::new(AppState {
            store: store.clone(),
            waker: delivery.waker(),
            monitor: delivery.monitor(),
            guard: Arc::clone(&guard),
            base_url: config.public_base_url(address),
            max_body_bytes: config.max_body_bytes,
            max_document_bytes: config.max_document_bytes,
            max_target_url_length: config.max_target_url_length,
            max_subscriptions_per_user: config.max_subscriptions_per_user,
            secret_rotation_overlap: config.delivery.secret_rotation_overlap,
        });
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap_fn(|request, service| {
                    use actix_web::dev::Service;
                    let method = request.method().to_string();
                    let route = request
                        .match_pattern()
                        .unwrap_or_else(|| "unmatched".into());
                    let response = service.call(request);
                    async move {
                        let response = response.await?;
                        let status = response.status().as_u16().to_string();
                        crate::metrics::METRICS
                            .http_requests
                            .with_label_values(&[route.as_str(), method.as_str(), status.as_str()])
                            .inc();
                        Ok(response)
                    }
                })
                .wrap(middleware::Logger::new(
                    "request peer=%a request=\"%r\" status=%s bytes=%b ms=%D",
                ))
                .configure(api::configure)
        })
        .shutdown_timeout(config.shutdown_grace.as_secs().max(1));
        if !handle_signals {
            server = server.disable_signals();
        }
        let server = server.listen(listener).map_err(StartError::Server)?.run();
        info!("listening on http://{address}");

        let pruner = Pruner::start(store.clone(), config.retention, config.prune_interval);
        Ok(Application {
            server,
            address,
            store,
            delivery,
            pruner,
            shutdown_grace: config.shutdown_grace,
        })
    }

    /// The address the API listens on (the real port when `listen` asked
    /// for port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops the server when `stop` is called on it.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// Serves until stopped, then lets attempts in flight finish within the
    /// grace period and closes the database.
    pub async fn run(self) -> Result<(), StartError> {
        self.server.await.map_err(StartError::Server)?;
        info!("HTTP server stopped; finishing delivery attempts in flight");
        self.delivery.stop(self.shutdown_grace);
        self.pruner.stop();
        self.store.close();
        info!("hookd stopped");
        Ok(())
    }
}

/// On an empty database, creates the first domain and user and writes the
/// user's key to a file only its owner can read. The key is never logged.
fn create_first_user(store: &Store, config: &Config) -> Result<(), StartError> {
    if !store.has_no_domains()? {
        return Ok(());
    }
    store.create_domain(FIRST_DOMAIN)?;
    let key = store.create_user(FIRST_DOMAIN, FIRST_USER)?;

    let path = config.data_dir.join(FIRST_KEY_FILE);
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&config.data_dir)?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        // The mode above applies only to a new file.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        writeln!(file, "{key}")?;
        file.sync_all()
    };
    write().map_err(|source| StartError::KeyFile {
        path: path.clone(),
        source,
    })?;
    info!(
        "created domain {FIRST_DOMAIN:?} with user {FIRST_USER:?}; its API key is in {}",
        path.display()
    );
    Ok(())
}
