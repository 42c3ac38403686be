#!/bin/bash
# The tool docker-compose.yml's health check calls, as in apache/kafka; warnings only, small heap.
exec java -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto \
    -Dlog4j.configuration=file:/opt/kafka/config/tools-log4j.properties \
    -cp "/opt/kafka/libs/*" kafka.admin.BrokerApiVersionsCommand "$@"
