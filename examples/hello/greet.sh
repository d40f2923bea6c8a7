#!/bin/sh
echo "$(cat /etc/greeting), $WHO (built by pyreg build)"
