#[tokio::main]
async fn main() -> anyhow::Result<()> {
    switchyard_api::main_entry().await
}
