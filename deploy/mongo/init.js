// Initiates the single-node replica set and creates one user per service, allowed only its
// own database (readWrite on `<namespace>_<service>`). Idempotent: runs on every
// `docker compose up` (the `mongo-init` one-shot); existing users get their password and
// roles set again, so changing a password in .env takes effect at the next `up`.
//
// Environment: MONGO_ROOT_USER / MONGO_ROOT_PASSWORD (to log in), MONGO_REPLICA_SET,
// MONGO_REPLICA_HOST (how the services reach this member), QMS_NAMESPACE, and
// MONGO_QMS_<SERVICE>_PASSWORD for each service.
const SERVICES = ["intake", "quality", "capa", "reporting", "notify"];
const env = process.env;

function required(name) {
  if (!env[name]) throw new Error(`${name} is not set (see .env.example)`);
  return env[name];
}

const admin = db.getSiblingDB("admin");
admin.auth(required("MONGO_ROOT_USER"), required("MONGO_ROOT_PASSWORD"));

const replicaSet = env.MONGO_REPLICA_SET || "rs0";
const host = env.MONGO_REPLICA_HOST || "mongo:27017";
try {
  rs.status();
} catch (e) {
  if (e.codeName !== "NotYetInitialized") throw e;
  rs.initiate({ _id: replicaSet, members: [{ _id: 0, host: host }] });
  print(`replica set ${replicaSet} initiated with ${host}`);
}

// Users are written to the primary: wait for this member to become it.
const deadline = Date.now() + 60 * 1000;
while (!admin.runCommand({ hello: 1 }).isWritablePrimary) {
  if (Date.now() > deadline) throw new Error("no primary after 60 s");
  sleep(500);
}

const namespace = env.QMS_NAMESPACE || "qms";
if (!/^[a-z][a-z0-9_]{0,30}$/.test(namespace)) throw new Error(`bad QMS_NAMESPACE ${namespace}`);
for (const service of SERVICES) {
  const user = `qms-${service}`;
  const pwd = required(`MONGO_QMS_${service.toUpperCase()}_PASSWORD`);
  const roles = [{ role: "readWrite", db: `${namespace}_${service}` }];
  if (admin.getUser(user)) {
    admin.updateUser(user, { pwd: pwd, roles: roles });
  } else {
    admin.createUser({ user: user, pwd: pwd, roles: roles });
  }
  print(`user ${user}: readWrite on ${namespace}_${service} only`);
}
