// `sqlx::migrate!` embeds ../migrations at compile time; rebuild when a migration is added or
// changed, or a warm build directory would keep serving the old set.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
